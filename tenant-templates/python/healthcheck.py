"""The image's HEALTHCHECK: GET /health of the app on $PORT, exit 0 when it answers 200."""
import os
import sys
import urllib.request

try:
    with urllib.request.urlopen(f"http://127.0.0.1:{os.environ.get('PORT', '8080')}/health", timeout=2.5) as r:
        sys.exit(0 if r.status == 200 else 1)
except OSError:
    sys.exit(1)
