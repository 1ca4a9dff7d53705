"""Fails on purpose: `tower run` must report the non-zero exit as a failure."""

import time

print("compat-crash: about to fail", flush=True)
time.sleep(1)
raise SystemExit(3)
