"""Time from exec to the first 200 from GET /v2/health/ready (or /health
for the original), polling every millisecond. Prints milliseconds, the
median of --runs runs.

    python3 ready_time.py --runs 5 --url http://127.0.0.1:19801/v2/health/ready -- CMD ARGS...
"""
import argparse
import http.client
import statistics
import subprocess
import time
import urllib.parse

parser = argparse.ArgumentParser()
parser.add_argument("--runs", type=int, default=5)
parser.add_argument("--url", required=True)
parser.add_argument("cmd", nargs=argparse.REMAINDER)
args = parser.parse_args()
url = urllib.parse.urlparse(args.url)
cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd

times = []
for _ in range(args.runs):
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            if time.perf_counter() - start > 60:
                raise SystemExit("not ready after 60 s")
            try:
                conn = http.client.HTTPConnection(url.hostname, url.port, timeout=1)
                conn.request("GET", url.path)
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.001)
        times.append((time.perf_counter() - start) * 1000)
    finally:
        proc.terminate()
        proc.wait()
print(f"{statistics.median(times):.1f} ms (median of {len(times)}: {', '.join(f'{t:.1f}' for t in times)})")
