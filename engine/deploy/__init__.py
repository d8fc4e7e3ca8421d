"""Layer 3, deployment: the forms a model is deployed as (float, int8, packed), measurement and its timing, runtimes (torch, ONNX Runtime) and ONNX export."""
