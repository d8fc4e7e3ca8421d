"""Layer 3, deployment: the forms a model is deployed as (float, int8, packed), measurement and its timing,
runtimes (torch, ONNX Runtime) and ONNX export.

Importing the layer imports `int8`, which registers the int8 checkpoint format's loader with
`formats.load_variant` (the packed format is registered by formats.py itself), and `pt2e`, which registers
the PT2E int8 backends beside FX's, so any checkpoint loads whichever deploy module a caller imported first.
It also makes torch.fx tracing thread-safe for the process (engine/deploy/fx_threads.py).
"""

from engine.deploy import fx_threads

fx_threads.install()  # torch.fx traces one at a time and leave other threads' forwards alone

from engine.deploy import int8, pt2e  # noqa: E402, F401, I001  (register the "int8" format and the pt2e backends)
