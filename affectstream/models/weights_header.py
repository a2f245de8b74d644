"""The plain fields of a torch weights file (a dict saved with `torch.save`), read without torch.

A live stream needs only a weights file's header (window length, front-end options, the
fusion's token layout) from the `.pt` files whose networks run on ONNX Runtime; importing
torch just for that costs a first launch seconds of CPU while the stream already runs. A
`torch.save` file is a zip holding one pickle; here tensors come back as None, and nothing
but plain containers may be built (anything else is refused, as torch's weights_only does).
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path


class _PlainUnpickler(pickle.Unpickler):
    _ALLOWED = {("collections", "OrderedDict")}

    def find_class(self, module: str, name: str):
        if module == "torch" or module.startswith("torch."):
            return lambda *args, **kwargs: None  # a tensor or its storage: not read here
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a weights file")

    def persistent_load(self, pid):
        return None  # a tensor's storage


def read_plain(path: str | Path, what: str) -> dict:
    """The dict saved in `path`, tensors as None; ValueError naming `what` it should be."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            name = next(n for n in z.namelist() if n.endswith("/data.pkl"))
            blob = _PlainUnpickler(io.BytesIO(z.read(name))).load()
    except (OSError, StopIteration, zipfile.BadZipFile, pickle.UnpicklingError, EOFError) as e:
        raise ValueError(f"{path}: not a {what} ({e.__class__.__name__})") from None
    if not isinstance(blob, dict):
        raise ValueError(f"{path}: not a {what}")
    return blob


__all__ = ["read_plain"]
