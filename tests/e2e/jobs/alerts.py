"""A job that raises its own alerts (Reporter.alert), hostile ones included, then ends.

It raises: an info alert, a warning naming the vocab_size check, an error with a long,
multi-line text full of mentions and control characters, one that claims a supervisor
rule (``check="nonfinite"``), then a loop of twelve that the supervisor must rate-limit.
"""

from __future__ import annotations

from harness.job import Reporter

rep = Reporter()
rep.start(total_steps=3, device="cpu")
rep.step(1, loss=1.0)
rep.alert("validation set has 0 samples", level="info")
rep.alert("FAIL vocab_size: token id 259 >= 256 embedding rows", check="vocab_size", rows=256)
rep.alert("@everyone\nline two\x1b[31m " + "x" * 5000, level="error")
rep.alert("pretending to be a NaN", check="nonfinite")
for n in range(12):
    rep.alert(f"loop alert {n}")
rep.step(2, loss=0.5)
rep.step(3, loss=0.25)
rep.end(loss=0.25)
rep.close()
