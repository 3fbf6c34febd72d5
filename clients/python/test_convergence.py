"""Runs the client against a real Convergence API: CONVERGENCE_API_URL and CONVERGENCE_API_KEY
(a tenant's key) must be set; internal/e2e's TestClients runs it that way with
`python3 -m unittest`."""

import http.server
import os
import tempfile
import threading
import unittest

from convergence import ConvergenceClient, ConvergenceError


class AgainstTheAPI(unittest.TestCase):
    client = None

    @classmethod
    def setUpClass(cls):
        cls.client = ConvergenceClient()

    def test_design_answers_the_finished_task_with_its_score(self):
        task = self.client.design("Design a rate limiter [sim:converge]", agentARole="Architect", agentBRole="SRE")
        self.assertEqual(task["status"], "completed")
        self.assertEqual(task["agentARole"], "Architect")
        self.assertTrue(0 <= task["result"]["convergenceScore"] <= 100)
        self.assertGreater(task["result"]["usage"]["totalTokens"], 0)

    def test_async_converge_is_streamed_and_waited_for(self):
        queued = self.client.converge("Plan a migration [sim:converge]", type="plan", **{"async": True})
        self.assertIn(queued["status"], ("queued", "running"))
        rounds = []
        streamed = self.client.stream(queued["taskId"], lambda e: rounds.append(e["round"]) if e["type"] == "round" else None)
        self.assertEqual(streamed["status"], "completed")
        self.assertEqual(len(rounds), streamed["result"]["rounds"])
        self.assertEqual(self.client.wait(queued["taskId"])["result"]["convergenceScore"], streamed["result"]["convergenceScore"])

    def test_decide_takes_its_context_as_the_second_argument(self):
        task = self.client.decide("Postgres or MySQL? [sim:converge]", "We run on Debian and need JSON columns.")
        self.assertEqual((task["type"], task["status"]), ("decide", "completed"))

    def test_cancel_stops_a_running_task(self):
        t = self.client.converge("Pick a queue [sim:never]", maxRounds=10, **{"async": True})
        self.client.cancel(t["taskId"])
        self.assertEqual(self.client.wait(t["taskId"])["status"], "cancelled")

    def test_errors_are_raised_with_their_code(self):
        with self.assertRaises(ConvergenceError) as e:
            self.client.task("tsk_does_not_exist")
        self.assertEqual((e.exception.status, e.exception.code), (404, "not_found"))
        self.assertTrue(e.exception.request_id)
        with self.assertRaises(ConvergenceError) as e:
            ConvergenceClient(api_key="sk_tenant_not_a_key").me()
        self.assertEqual(e.exception.status, 401)

    def test_me_usage_and_a_webhook_the_client_verifies(self):
        self.assertGreater(self.client.me()["envId"], 0)
        self.assertEqual(self.client.usage(group_by=["model"])["groupBy"], ["model"])
        secret = self.client.webhook_secret()["secret"]
        delivered = {}

        class Receiver(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                delivered["headers"] = dict(self.headers.items())
                delivered["body"] = self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        server = http.server.HTTPServer(("127.0.0.1", 0), Receiver)
        thread = threading.Thread(target=server.handle_request, daemon=True)
        thread.start()
        self.client.review("Review this plan [sim:converge]", webhookUrl=f"http://127.0.0.1:{server.server_port}/hook")
        thread.join(timeout=60)
        server.server_close()
        self.assertIn("body", delivered, "no webhook delivery")
        self.assertTrue(ConvergenceClient.verify_webhook(delivered["headers"], delivered["body"], secret))
        self.assertFalse(ConvergenceClient.verify_webhook(delivered["headers"], delivered["body"] + b" ", secret))
        self.assertFalse(ConvergenceClient.verify_webhook(delivered["headers"], delivered["body"], "whsec_c2VjcmV0"))

    def test_a_key_file_is_read_at_each_call(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "api-key")
            with open(path, "w") as f:
                f.write(os.environ["CONVERGENCE_API_KEY"] + "\n")
            from_file = ConvergenceClient(api_key_file=path)
            self.assertGreater(from_file.me()["envId"], 0)
            with open(path, "w") as f:
                f.write("sk_tenant_replaced_by_someone\n")
            with self.assertRaises(ConvergenceError) as e:
                from_file.me()
            self.assertEqual(e.exception.status, 401)


if __name__ == "__main__":
    unittest.main()
