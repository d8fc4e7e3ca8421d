"""Issue #23 item 4: what this CPU can do, measured once per machine, cached, and said in words on Launch and
Trade-offs."""

from __future__ import annotations

from engine.deploy import capability as cap_module
from engine.deploy.capability import Capability, cache_file, calibrate, capability, in_words
from engine.deploy.timing import Policy
from tests.pages.conftest import open_page

FAST = Policy(rounds=3, block_seconds=0.005, budget_s=1.0, wait_s=0.01, bootstrap=50)


def test_calibration_times_int8_and_bf16_against_fp32_and_is_cached_per_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESSION_LAB_STORE_DIR", str(tmp_path))
    assert capability() is None
    cap = calibrate(FAST)
    assert cap.conv_int8 > 0 and cap.linear_int8 > 0 and cache_file(cap.machine).is_file()
    assert (cap.conv_bf16 is None) == (not cap_module.has_bf16())
    assert capability() == cap  # read back from the cache, not measured again
    words = in_words(cap)
    assert f"{cap.conv_int8:.1f}x" in words and ("VNNI" in words)


def test_the_words_follow_what_the_cpu_has():
    slow = Capability("other", "an old CPU", 1.3, 1.4, None, None, "clean", 3.0, 0.0)
    words = in_words(slow)  # a machine id that is not this one: no ISA features known
    assert "no VNNI" in words and "1.3x" in words and "no bf16 instructions" in words
    noisy = Capability("other", "x", 4.0, 9.0, 1.8, 3.0, "noisy: busy", 3.0, 0.0)
    assert "re-measure when it is quiet" in in_words(noisy) and "bf16: 1.8x" in in_words(noisy)


def test_launch_offers_the_calibration_and_then_says_what_it_found(db):
    at = open_page("pages/launch.py")
    assert not at.exception and any(b.key == "launch.cpu_calibrate" for b in at.button)
    assert any("Not measured on this machine yet" in c.value for c in at.caption)
    next(b for b in at.button if b.key == "launch.cpu_calibrate").click().run(timeout=120)
    assert not at.exception
    assert any("int8 convolutions ran" in m.value for m in at.markdown)
    at = open_page("pages/tradeoffs.py")
    assert not at.exception and any("int8 convolutions ran" in m.value for m in at.markdown)
