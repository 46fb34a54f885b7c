"""Checkpoints: ``handgrad.save(obj, path)`` / ``handgrad.load(path)`` in the safetensors format.

A checkpoint is one ``.safetensors`` file:

* every array leaf of ``obj`` (a NumPy/CuPy array, a handgrad ``Tensor``, a NumPy scalar) is stored as a
  safetensors tensor named by its dotted path, e.g. ``model.fc.weight`` or ``optimizer.state.0.exp_avg``;
  a flat state_dict keeps its own keys as the tensor names, so ``safetensors.torch.load_file(path)``
  gives a dict that ``torch.nn.Module.load_state_dict`` accepts directly;
* everything else (ints, floats, bools, strings, None, lists, tuples, dicts with ``str`` or ``int`` keys)
  is kept as JSON in the safetensors metadata under ``handgrad.structure``, with each array leaf replaced
  by a reference to its tensor, so ``load`` rebuilds the exact nested structure: int keys stay ints
  (optimizer state_dicts), tuples stay tuples, key order is kept.

Writes are atomic: the bytes go to a temporary file in the destination's directory, are flushed and
fsynced, and only then ``os.replace``-d over the destination, so a crash mid-save leaves the previous
checkpoint intact. A file saved by another program (e.g. ``safetensors.torch.save_file``) loads as a flat
``{name: ndarray}`` dict.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy

from handgrad.engine.backend import get_array_module
from handgrad.engine.tensor import Tensor

__all__ = ["save", "load", "load_into", "CheckpointError"]

_FORMAT_KEY = "handgrad.format"
_STRUCTURE_KEY = "handgrad.structure"
_FORMAT_VERSION = "1"

# dtypes that the safetensors format (and so PyTorch's reader) can hold.
_STORABLE_KINDS = {"b", "i", "u", "f"}


class CheckpointError(ValueError):
    """A file that is not a readable handgrad checkpoint (truncated, corrupt, or not safetensors)."""


# -- flattening --------------------------------------------------------------------------------------------
def _host_array(a: Any) -> numpy.ndarray:
    """A C-contiguous NumPy copy-or-view of a NumPy/CuPy array (safetensors needs contiguous host bytes)."""
    xp = get_array_module(a)
    a = a if xp is numpy else xp.asnumpy(a)
    # not ascontiguousarray: it turns 0-d arrays into shape (1,)
    return a if a.flags.c_contiguous else numpy.array(a, order="C")


class _Flattener:
    """Walks ``obj`` once: array leaves go to ``tensors`` and are replaced by references in the skeleton.

    Skeleton encoding (JSON): plain JSON scalars and lists as themselves; a dict as
    ``{"__dict__": [[key, value], ...]}`` (a pair list, so int keys and order survive JSON);
    a tuple as ``{"__tuple__": [...]}``; an array leaf as ``{"__tensor__": name, "type": kind}``
    with kind ``ndarray``, ``Tensor`` or ``scalar`` (a NumPy scalar such as ``numpy.float32(1)``).
    """

    def __init__(self) -> None:
        self.tensors: OrderedDict[str, numpy.ndarray] = OrderedDict()

    def _name(self, path: list[str]) -> str:
        # Dotted path, as in state_dict keys; a clash (e.g. keys "a.b" and "a" -> "b") gets a "#n" suffix.
        base = ".".join(path) if path else "_"
        name, n = base, 1
        while name in self.tensors:
            name = f"{base}#{n}"
            n += 1
        return name

    def _array_leaf(self, arr: Any, path: list[str], kind: str, extra: dict[str, Any]) -> dict[str, Any]:
        host = _host_array(arr)
        where = ".".join(path) or "<root>"
        if host.dtype.kind not in _STORABLE_KINDS:
            raise TypeError(
                f"handgrad.save: the array at '{where}' has dtype {host.dtype}, which safetensors cannot "
                "store (only bool, integer and floating arrays)"
            )
        if host.dtype.byteorder == ">":  # safetensors is little-endian on disk
            host = host.astype(host.dtype.newbyteorder("<"))
        name = self._name(path)
        self.tensors[name] = host
        return {"__tensor__": name, "type": kind, **extra}

    def walk(self, obj: Any, path: list[str]) -> Any:
        where = ".".join(path) or "<root>"
        if isinstance(obj, Tensor):
            extra = {"requires_grad": True} if obj.requires_grad else {}
            return self._array_leaf(obj.array, path, "Tensor", extra)
        xp = get_array_module(obj)
        if isinstance(obj, (numpy.ndarray, xp.ndarray)):
            return self._array_leaf(obj, path, "ndarray", {})
        if isinstance(obj, numpy.generic) and not isinstance(obj, (numpy.str_, numpy.bytes_)):
            return self._array_leaf(numpy.asarray(obj), path, "scalar", {})
        if obj is None or isinstance(obj, (bool, int, str)):
            return obj
        if isinstance(obj, float):
            return obj  # json writes nan/inf as NaN/Infinity and reads them back
        if isinstance(obj, Mapping):
            pairs = []
            for k, v in obj.items():
                if isinstance(k, numpy.integer):
                    k = int(k)
                if not isinstance(k, (str, int)):
                    raise TypeError(
                        f"handgrad.save: dict at '{where}' has a key {k!r} of type {type(k).__name__}; "
                        "only str and int keys can be stored"
                    )
                pairs.append([k, self.walk(v, [*path, str(k)])])
            return {"__dict__": pairs}
        if isinstance(obj, tuple):
            return {"__tuple__": [self.walk(v, [*path, str(i)]) for i, v in enumerate(obj)]}
        if isinstance(obj, list):
            return [self.walk(v, [*path, str(i)]) for i, v in enumerate(obj)]
        raise TypeError(
            f"handgrad.save: cannot store the {type(obj).__name__} at '{where}'; a checkpoint holds arrays, "
            "Tensors, numbers, strings, None, and lists/tuples/dicts of them"
        )


# -- save --------------------------------------------------------------------------------------------------
def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one."""
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them visible
        # mkstemp makes the file 0600; give it the permissions a plain open() would have.
        mode = os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o666 & ~_current_umask()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # persist the rename itself; not possible on every platform/filesystem, so best effort
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _refuse_modules(obj: Any) -> None:
    """A whole model (or optimizer) would need pickle to store its code; checkpoints hold data only."""
    from handgrad.nn.module import Module
    from handgrad.optim.optimizer import Optimizer

    if isinstance(obj, (Module, Optimizer)):
        kind = "Module" if isinstance(obj, Module) else "Optimizer"
        raise TypeError(
            f"handgrad.save: cannot save a whole {kind} ({type(obj).__name__}); save its state_dict() instead, "
            f"e.g. handgrad.save(obj.state_dict(), f) (checkpoints never pickle objects)"
        )


def save(obj: Any, f: Any, pickle_module: Any = None, pickle_protocol: Any = None, **kwargs: Any) -> None:
    """Save a state_dict or a nested dict of them to ``f`` (safetensors): a path, written atomically, or
    a binary file object (``io.BytesIO``, an open file), written at its current position.

    Args:
        obj: a ``{name: array or Tensor}`` state_dict, or any nesting of dicts (str or int keys),
            lists and tuples whose leaves are arrays, Tensors, NumPy scalars, ints, floats, bools, strings
            or None, e.g. ``{"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3}``.
            A whole Module or Optimizer is refused (save its ``state_dict()``): nothing is pickled.
        f: destination path (conventionally ``*.safetensors``; its directory must exist) or an object
            with ``write(bytes)``.
        pickle_module, pickle_protocol, **kwargs: accepted for ``torch.save`` compatibility; unused
            (the format never pickles).

    Raises:
        TypeError: a Module/Optimizer, or a leaf, key or array dtype that cannot be stored (names its
            dotted path).
        FileNotFoundError: the destination directory does not exist.
    """
    from safetensors.numpy import save as _st_save

    _refuse_modules(obj)
    path = None
    if not hasattr(f, "write"):
        path = os.fspath(f)
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"handgrad.save: directory '{directory}' for '{path}' does not exist")
    flat = _Flattener()
    skeleton = flat.walk(obj, [])
    metadata = {
        "format": "pt",  # the convention safetensors readers use; the tensors are plain little-endian arrays
        _FORMAT_KEY: _FORMAT_VERSION,
        _STRUCTURE_KEY: json.dumps(skeleton, separators=(",", ":")),
    }
    data = _st_save(dict(flat.tensors), metadata=metadata)
    if path is None:
        f.write(data)
        if hasattr(f, "flush"):
            f.flush()
    else:
        _atomic_write(path, data)


# -- load --------------------------------------------------------------------------------------------------
def _fail(path: str, reason: str) -> CheckpointError:
    return CheckpointError(f"handgrad.load: '{path}' is not a readable handgrad checkpoint ({reason})")


def _rebuild(node: Any, tensors: Mapping[str, numpy.ndarray], path: str) -> Any:
    if isinstance(node, list):
        return [_rebuild(v, tensors, path) for v in node]
    if isinstance(node, dict):
        if "__dict__" in node:
            return {k: _rebuild(v, tensors, path) for k, v in node["__dict__"]}
        if "__tuple__" in node:
            return tuple(_rebuild(v, tensors, path) for v in node["__tuple__"])
        if "__tensor__" in node:
            name = node["__tensor__"]
            if name not in tensors:
                raise _fail(path, f"the structure refers to tensor '{name}', which is not in the file")
            arr = tensors[name]
            kind = node.get("type", "ndarray")
            if kind == "Tensor":
                return Tensor(arr, requires_grad=bool(node.get("requires_grad", False)))
            if kind == "scalar":
                return arr[()]
            return arr
        raise _fail(path, f"unknown structure node with keys {sorted(node)}")
    return node


def _read_header(path: str, data: bytes) -> dict[str, Any]:
    """Parse the safetensors header: 8-byte little-endian length N, then N bytes of JSON."""
    if len(data) < 8:
        raise _fail(path, f"the file has {len(data)} bytes; a safetensors file starts with an 8-byte header length")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        raise _fail(path, f"the header claims {n} bytes but the file has only {len(data) - 8} after the length; "
                    "it is truncated or not a safetensors file")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _fail(path, f"the safetensors header is not valid JSON: {e}") from e
    if not isinstance(header, dict):
        raise _fail(path, "the safetensors header is not a JSON object")
    return header


def _map_location(obj: Any, map_location: Any) -> Any:
    """Apply ``torch.load``'s ``map_location``: None or 'cpu' keep host arrays; a device (string or
    ``handgrad.device``) moves every Tensor and array there; a dict is read as {saved device: target},
    and since handgrad checkpoints are always saved from host memory, only its 'cpu' entry matters."""
    if map_location is None:
        return obj
    if isinstance(map_location, Mapping):
        map_location = map_location.get("cpu", "cpu")
    if callable(map_location) and not isinstance(map_location, str):
        raise TypeError("handgrad.load: a callable map_location is not supported; give a device such as 'cpu'")
    target = str(map_location)
    if target == "cpu":
        return obj
    from handgrad.engine.backend import send

    return send(obj, map_location)


def load(f: Any, map_location: Any = None, pickle_module: Any = None, *, weights_only: bool | None = None,
         mmap: bool | None = None, **kwargs: Any) -> Any:
    """Load what ``save`` wrote, with the same nesting, key types and leaf types, from a path or a binary
    file object (read from its current position to the end).

    Arrays come back as NumPy arrays, Tensors as (leaf) Tensors, moved to ``map_location`` when it names
    a device. A safetensors file written by another program loads as a flat ``{name: ndarray}`` dict.
    ``weights_only`` is accepted with any value: the format holds only data, so loading never runs code.
    ``pickle_module``, ``mmap`` and other ``torch.load`` keywords are accepted and unused.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError (a ValueError): the file is truncated, corrupt or not safetensors; the message is
            ``handgrad.load: 'PATH' is not a readable handgrad checkpoint (reason)``.
    """
    return _map_location(_load(f), map_location)


def _load(f: Any) -> Any:
    from safetensors.numpy import load as _st_load

    if hasattr(f, "read"):
        path = getattr(f, "name", None) or f"<{type(f).__name__}>"
        path = str(path)
        data = f.read()
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"handgrad.load: file object {path} must be opened in binary mode ('rb')")
        data = bytes(data)
    else:
        path = os.fspath(f)
        if not os.path.exists(path):
            raise FileNotFoundError(f"handgrad.load: no checkpoint at '{path}'")
        if os.path.isdir(path):
            raise _fail(path, "it is a directory")
        with open(path, "rb") as fh:
            data = fh.read()
    metadata = _read_header(path, data).get("__metadata__") or {}
    if not isinstance(metadata, dict):
        raise _fail(path, "its __metadata__ is not a JSON object")
    try:
        # safetensors.numpy.load (not safe_open, which returns 0-d arrays with shape (1,)) validates the
        # dtypes, shapes and byte ranges of every tensor against the buffer.
        loaded = _st_load(data)
    except Exception as e:  # safetensors raises its own SafetensorError
        reason = str(e).strip() or type(e).__name__
        raise _fail(path, f"{type(e).__name__}: {reason}") from e
    tensors = dict(loaded)  # safetensors.numpy copies out of the buffer: the arrays are writable
    if _STRUCTURE_KEY not in metadata:
        return tensors  # a plain safetensors file (e.g. written by safetensors.torch.save_file)
    try:
        skeleton = json.loads(metadata[_STRUCTURE_KEY])
    except json.JSONDecodeError as e:
        raise _fail(path, f"its handgrad.structure metadata is not valid JSON: {e}") from e
    return _rebuild(skeleton, tensors, path)


def load_into(module: Any, path: str | os.PathLike[str], key: str | None = None, strict: bool = True) -> Any:
    """Load a checkpoint and copy its state_dict into ``module`` (``Module.load_state_dict``).

    ``key`` picks a sub-dict of a nested checkpoint (e.g. ``"model"``); without it, a checkpoint whose top
    level has a ``"model"`` dict uses that, else the whole file is taken as the state_dict. Returns the
    full loaded checkpoint so the caller can read ``epoch``, the optimizer state, etc.
    """
    ckpt = load(path)
    if key is not None:
        if not isinstance(ckpt, Mapping) or key not in ckpt:
            have = list(ckpt) if isinstance(ckpt, Mapping) else type(ckpt).__name__
            raise KeyError(f"handgrad.load_into: '{os.fspath(path)}' has no entry '{key}' (top level: {have})")
        state = ckpt[key]
    elif isinstance(ckpt, Mapping) and isinstance(ckpt.get("model"), Mapping):
        state = ckpt["model"]
    else:
        state = ckpt
    module.load_state_dict(state, strict=strict)
    return ckpt
