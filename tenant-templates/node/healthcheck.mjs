// The image's HEALTHCHECK: GET /health of the app on $PORT, exit 0 when it answers 200.
const port = process.env.PORT || 8080;
try {
  const res = await fetch(`http://127.0.0.1:${port}/health`, { signal: AbortSignal.timeout(2500) });
  process.exit(res.ok ? 0 : 1);
} catch {
  process.exit(1);
}
