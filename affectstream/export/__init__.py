"""Compiled inference: one backend contract, ONNX export, ONNX Runtime, TensorRT, CUDA path.

Every encoder (and, later, the fusion model) runs through `Backend.infer(dict) -> dict` with
three implementations: PyTorch (the reference), ONNX Runtime and TensorRT. Each is imported
only when chosen; `select.open_backend` picks one. Nothing here imports torch, onnxruntime or
tensorrt at import time.
"""
