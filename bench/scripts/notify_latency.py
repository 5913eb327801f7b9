"""Time from creating an alert rule to its signed notification at a real receiver.

Usage: python3 notify_latency.py FLOWSCOPE_BINARY [runs]
Starts `flowscope serve --demo --allow-private-webhooks` on loopback, a receiver, a webhook,
then creates rules that fire at their first run (`for: 0s`) and times their arrival.
"""
import base64, hashlib, hmac, http.server, json, os, subprocess, sys, tempfile, threading, time, urllib.request

binary = sys.argv[1]
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
arrivals = []

class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        arrivals.append((time.monotonic(), dict(self.headers), body))
        self.send_response(204)
        self.end_headers()
    def log_message(self, *args):
        pass

receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
threading.Thread(target=receiver.serve_forever, daemon=True).start()
data = tempfile.mkdtemp()
server = subprocess.Popen([binary, "serve", "--demo", "--allow-private-webhooks", "--data-dir", data,
                           "--api-addr", "127.0.0.1:18181", "--otlp-grpc-addr", "127.0.0.1:0",
                           "--otlp-http-addr", "127.0.0.1:0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
api = "http://127.0.0.1:18181"

def call(method, path, body=None):
    request = urllib.request.Request(api + path, method=method, data=json.dumps(body).encode() if body else None,
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request) as answer:
        return json.loads(answer.read() or b"null")

try:
    for _ in range(200):
        try:
            urllib.request.urlopen(api + "/healthz"); break
        except Exception:
            time.sleep(0.1)
    time.sleep(5)  # let the demo send a few seconds of spans
    hook = call("POST", "/api/webhooks", {"name": "r", "url": f"http://127.0.0.1:{receiver.server_port}/"})
    key = base64.b64decode(hook["secret"].removeprefix("whsec_"))
    latencies = []
    for i in range(runs):
        before = len(arrivals)
        start = time.monotonic()
        call("POST", "/api/alert-rules", {"name": f"busy services {i}", "interval": "1s", "for": "0s", "webhooks": [hook["id"]],
             "sql": "SELECT service_name AS service, count(*) AS spans FROM spans WHERE start_time > now() - INTERVAL '1 minute' GROUP BY service_name"})
        while len(arrivals) == before:
            time.sleep(0.005)
        at, headers, body = arrivals[before]
        signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
        expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        assert hmac.compare_digest(expected, headers["webhook-signature"]), "bad signature"
        message = json.loads(body)
        latencies.append((at - start) * 1000)
        print(f"rule {i}: {len(message['alerts'])} alerts, {len(body)} bytes, signed, {latencies[-1]:.0f} ms after the rule was created")
    latencies.sort()
    print(f"median {latencies[len(latencies)//2]:.0f} ms, max {latencies[-1]:.0f} ms over {runs} rules")
finally:
    server.terminate(); server.wait()
