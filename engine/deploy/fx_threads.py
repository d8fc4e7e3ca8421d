"""torch.fx tracing that leaves other threads alone.

torch.fx's symbolic tracing (BatchNorm folding, the FX int8 backend, equalization, the mixed-precision
prefix cache) patches `torch.nn.Module.__call__` and `__getattr__` for the whole process while it traces.
A forward pass in another thread at that moment (the What-if's background measurement beside a job, or a
page beside the job runner) is routed into that tracer: it fails with "module is not installed as a
submodule", or its calls join the traced graph. And two traces in two threads undo each other's patches.

`install()` (called once when the deploy layer is imported) makes this safe for everything that traces
through `torch.fx.Tracer` (symbolic_trace and torch.ao's FX quantization tracer alike):

- one trace at a time in the process: `Tracer.trace` holds a re-entrant lock (a trace takes milliseconds
  to a second; a nested trace in the same thread is allowed);
- the tracer's `call_module` and `getattr` hooks answer only the thread that is tracing: a module called,
  or a parameter read, from any other thread runs exactly as without a trace.
"""

from __future__ import annotations

import threading
from typing import Any

from torch import fx

TRACE_LOCK = threading.RLock()


def install() -> None:
    tracer = fx.Tracer
    if getattr(tracer, "_one_thread_at_a_time", False):
        return
    trace, call_module, getattr_ = tracer.trace, tracer.call_module, tracer.getattr

    def traced_by(self: fx.Tracer) -> bool:
        return getattr(self, "_tracing_thread", None) in (None, threading.get_ident())

    def one_trace(self: fx.Tracer, root: Any, concrete_args: Any = None) -> Any:
        with TRACE_LOCK:
            outer = getattr(self, "_tracing_thread", None)
            self._tracing_thread = threading.get_ident()
            try:
                return trace(self, root, concrete_args)
            finally:
                self._tracing_thread = outer

    def own_call_module(self: fx.Tracer, m: Any, forward: Any, args: Any, kwargs: Any) -> Any:
        if not traced_by(self):
            return forward(*args, **kwargs)  # another thread's forward: run it as if nothing traced
        return call_module(self, m, forward, args, kwargs)

    def own_getattr(self: fx.Tracer, attr: str, attr_val: Any, parameter_proxy_cache: dict) -> Any:
        if not traced_by(self):
            return attr_val
        return getattr_(self, attr, attr_val, parameter_proxy_cache)

    tracer.trace, tracer.call_module, tracer.getattr = one_trace, own_call_module, own_getattr
    tracer._one_thread_at_a_time = True
