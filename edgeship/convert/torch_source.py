"""The PyTorch front end: a `.pt2` or `FILE.py:FUNCTION` -> a float32 `.tflite` (NHWC input)
through litert-torch, plus PyTorch's own outputs to check every mode against.

torch and litert_torch are imported only here, and only when a PyTorch model is converted: a
Keras user without torch never notices. Nothing here writes a file.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.scores import as_probabilities, class_count
from edgeship.convert.errors import ConvertError
from edgeship.convert.loading import ModelSignature
from edgeship.convert.source import ModelSource, outputs_logits

TORCH_SUFFIXES = (".pt2",)
# Files that hold weights or TorchScript, not a program litert-torch can take.
REFUSED_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".torchscript", ".ptl")
EXPORT_SNIPPET = (
    "    model.eval(); example = (torch.zeros(1, 3, H, W),)\n"
    "    program = torch.export.export(model, example)\n"
    "    torch.export.save(program, 'model.pt2')"
)
FORMS = (
    "convert takes a PyTorch model as FILE.pt2 (torch.export.save of an ExportedProgram) or "
    "FILE.py:FUNCTION (a function returning (model, example_args), the model in eval mode)"
)
REFERENCE_BATCH = 256


def split_torch_spec(model: str | os.PathLike) -> tuple[Path, str | None] | None:
    """(file, function) when `model` names a PyTorch model or a refused PyTorch file, else None
    (a Keras model, or anything else convert's Keras checks answer)."""
    text = os.fspath(model)
    head, sep, func = text.rpartition(":")
    if sep and head.lower().endswith(".py") and func.isidentifier():
        return Path(head), func
    p = Path(text)
    if p.suffix.lower() in TORCH_SUFFIXES + REFUSED_SUFFIXES or p.suffix.lower() == ".py":
        return p, None
    if p.is_file() and _is_torchscript_or_pickle(p):
        return p, None
    return None


def _is_torchscript_or_pickle(p: Path) -> bool:
    """A zip written by torch.save / torch.jit.save (any suffix)."""
    if not zipfile.is_zipfile(p):
        return False
    with contextlib.suppress(zipfile.BadZipFile, OSError):
        with zipfile.ZipFile(p) as z:
            names = z.namelist()
        return any(n.endswith("data.pkl") or "/code/" in n for n in names) and not any(
            n.endswith(".keras") or n == "config.json" for n in names
        )
    return False


def _refuse(p: Path, what: str) -> ConvertError:
    """One line naming the two forms (and what was received), then the export snippet."""
    return ConvertError(f"{what}: {FORMS}. Received: path={p}. Export it with:\n{EXPORT_SNIPPET}")


def check_torch_spec(p: Path, function: str | None) -> None:
    """Refuse what litert-torch cannot take (a state_dict, TorchScript) before torch loads."""
    if not p.exists():
        raise ConvertError(f"Model file not found. Received: path={p}")
    if not p.is_file():
        raise ConvertError(f"The model must be a file, not a folder. Received: path={p}")
    suffix = p.suffix.lower()
    if suffix == ".py" and function is None:
        raise _refuse(p, "Name the function that builds the model: FILE.py:FUNCTION")
    if suffix in REFUSED_SUFFIXES or (suffix != ".py" and suffix not in TORCH_SUFFIXES):
        what = "TorchScript" if _has_code(p) else "a state_dict or pickled module"
        raise _refuse(p, f"This file holds {what}, which carries no traceable program")
    if suffix == ".pt2" and not zipfile.is_zipfile(p):
        raise ConvertError(
            "Not a valid .pt2 file (not a zip archive: truncated or another format). Write it "
            f"with torch.export.save(program, 'model.pt2'). Received: path={p}"
        )


def _has_code(p: Path) -> bool:
    with contextlib.suppress(zipfile.BadZipFile, OSError), zipfile.ZipFile(p) as z:
        return any("/code/" in n for n in z.namelist())
    return False


def _first_line(err: BaseException) -> str:
    for line in str(err).strip().splitlines():
        if line.strip():
            return line.strip()[:300]
    return type(err).__name__


@contextlib.contextmanager
def _quiet() -> Iterator[list[str]]:
    """The quantizer's `quiet` (native logs on fd 2 kept, warnings and stderr dropped) plus
    litert-torch's progress lines (stdout) and torch's log records (the graph it failed on)."""
    from edgeship.convert.engine import quiet

    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with quiet() as lines, contextlib.redirect_stdout(io.StringIO()):
            yield lines
    finally:
        logging.disable(previous)


def _import_torch():
    try:
        with _quiet():
            import litert_torch
            import torch
    except ImportError as err:
        raise ConvertError(
            "Converting a PyTorch model needs torch and litert-torch: pip install "
            "'edgeship[torch]' (torch's CPU build: see docs/pytorch.md). "
            f"Received: {_first_line(err)}"
        ) from None
    return torch, litert_torch


class _Singles:
    """A module exported for batch 1 only (torch guards the size): called image by image."""

    def __init__(self, module: Any) -> None:
        self.module = module

    def __call__(self, x):
        import torch

        if len(x) == 1:
            return self.module(x)
        return torch.cat([self.module(x[i : i + 1]) for i in range(len(x))])

    def __getattr__(self, name: str) -> Any:
        return getattr(self.module, name)


def unwrap(module: Any) -> Any:
    """The torch module itself (a batch-1 export's, without its image-by-image wrapper)."""
    return module.module if isinstance(module, _Singles) else module


def _image_shape(shape: tuple, p: Path) -> tuple[int, int, int]:
    """(N, C, H, W) with fixed C, H, W -> (H, W, C)."""
    dims = tuple(shape)
    if len(dims) != 4 or not all(isinstance(d, int) for d in dims[1:]):
        raise ConvertError(
            "The PyTorch model must take one batch of fixed-size images (N, C, H, W). "
            f"Received: input shape={[str(d) for d in dims]}, path={p}"
        )
    return int(dims[2]), int(dims[3]), int(dims[1])


def _load_pt2(torch, p: Path):
    try:
        with _quiet():
            program = torch.export.load(str(p))
    except Exception as err:  # noqa: BLE001 - torch raises anything on a foreign zip
        raise ConvertError(
            f"torch.export cannot load the file ({type(err).__name__}: {_first_line(err)}). "
            f"{FORMS}. Received: path={p}"
        ) from None
    specs = [s for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    nodes = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    if len(specs) != 1:
        raise ConvertError(
            f"convert handles image classifiers with one input. Received: inputs={len(specs)}, "
            f"path={p}"
        )
    val = nodes[specs[0].arg.name].meta.get("val")
    shape = tuple(int(d) if isinstance(d, int) else d for d in getattr(val, "shape", ()))
    shape = tuple(d if isinstance(d, int) else str(d) for d in shape)
    module = program.module()
    return (_Singles(module) if shape[:1] == (1,) else module), _image_shape(shape, p)


def _load_factory(torch, p: Path, function: str):
    name = f"_edgeship_torch_factory_{abs(hash(str(p.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, p)
    if spec is None or spec.loader is None:  # never for a .py path (split_torch_spec)
        raise ConvertError(f"{p.name} cannot be imported. Received: path={p}:{function}")
    try:
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        factory = getattr(module, function)
        made = factory()
    except AttributeError as err:
        raise ConvertError(
            f"{p.name} has no function {function!r} ({_first_line(err)}). Received: "
            f"path={p}:{function}"
        ) from None
    except Exception as err:  # noqa: BLE001 - the user's code raises anything
        raise ConvertError(
            f"{p.name}:{function} failed ({type(err).__name__}: {_first_line(err)}). "
            f"Received: path={p}:{function}"
        ) from None
    finally:
        sys.modules.pop(name, None)
    if not isinstance(made, tuple) or len(made) != 2 or not isinstance(made[0], torch.nn.Module):
        raise ConvertError(
            f"{p.name}:{function} must return (model, example_args): a torch.nn.Module and a "
            f"tuple of example inputs. Received: {type(made).__name__}"
        )
    model, args = made
    args = tuple(args) if isinstance(args, (tuple, list)) else (args,)
    if len(args) != 1 or not isinstance(args[0], torch.Tensor):
        raise ConvertError(
            "The example_args must be one image batch tensor (N, C, H, W). "
            f"Received: {len(args)} argument(s)"
        )
    try:
        with _quiet():
            program = torch.export.export(model.eval(), args)
    except Exception as err:  # noqa: BLE001 - torch.export's errors have many classes
        raise ConvertError(
            f"torch.export cannot trace the model ({type(err).__name__}: {_first_line(err)}). "
            "Data-dependent control flow (an `if` on a tensor's value) must become "
            f"torch.cond or be removed. Received: path={p}:{function}"
        ) from None
    del program  # traceable: the model itself is the reference (any batch size)
    return model, _image_shape(tuple(args[0].shape), p)


def load_torch_module(model: str | os.PathLike) -> tuple[Any, tuple[int, int, int]]:
    """`FILE.pt2` or `FILE.py:FUNCTION` -> (the module in eval mode, its image (H, W, C))."""
    spec = split_torch_spec(model)
    if spec is None:
        raise ConvertError(f"Not a PyTorch model. {FORMS}. Received: path={model}")
    p, function = spec
    check_torch_spec(p, function)
    torch, _ = _import_torch()
    if function is None:
        module, shape = _load_pt2(torch, p)
    else:
        module, shape = _load_factory(torch, p, function)
    with contextlib.suppress(Exception):  # an exported program's module has no train mode
        module.eval()
    return module, shape


def torch_probabilities(module: Any, x: np.ndarray, logits: bool | None = None) -> np.ndarray:
    """NHWC model input (float32) -> the module's probabilities (float64), in batches."""
    import torch

    batches = []
    with torch.inference_mode():
        for i in range(0, len(x), REFERENCE_BATCH):
            nchw = np.ascontiguousarray(
                np.asarray(x[i : i + REFERENCE_BATCH], np.float32).transpose(0, 3, 1, 2)
            )
            batches.append(module(torch.from_numpy(nchw)).numpy())
    scores = np.concatenate(batches) if batches else np.zeros((0, 0), np.float32)
    probabilities = None if logits is None else not logits
    return np.asarray(as_probabilities(scores, probabilities=probabilities), np.float64)


def _convert_nhwc(torch, litert_torch, nhwc, shape: tuple[int, int, int], batch1: bool) -> bytes:
    """litert-torch's float32 flatbuffer, with a dynamic batch (-1) unless the program was
    exported for batch 1 only."""
    if not batch1:
        batch = torch.export.Dim("batch")
        with contextlib.suppress(Exception):  # a model that fixes its batch: batch 1 below
            return litert_torch.convert(
                nhwc, (torch.zeros(2, *shape),), dynamic_shapes=({0: batch},)
            ).model_content()
    return litert_torch.convert(nhwc, (torch.zeros(1, *shape),)).model_content()


def torch_source(model: str | os.PathLike) -> ModelSource:
    """The PyTorch front end: load `FILE.pt2` or `FILE.py:FUNCTION`, convert it to a float32
    `.tflite` with NHWC input through litert-torch, and keep PyTorch itself as the reference."""
    module, (h, w, c) = load_torch_module(model)
    found = split_torch_spec(model)
    assert found is not None  # load_torch_module raised otherwise
    p, function = found
    torch, litert_torch = _import_torch()
    example = torch.zeros(1, c, h, w)
    try:
        with torch.inference_mode():
            out = module(example)
    except Exception as err:  # noqa: BLE001
        raise ConvertError(
            f"The PyTorch model does not run on a (1, {c}, {h}, {w}) image "
            f"({type(err).__name__}: {_first_line(err)}). Received: path={p}"
        ) from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConvertError(
            "The PyTorch model must output one score per class, (batch, classes). "
            f"Received: output={shape}, path={p}"
        )
    raw = unwrap(module)
    try:
        with _quiet() as log:
            nhwc = litert_torch.to_channel_last_io(raw, args=[0])
            nhwc.training = False  # (not .eval(): an exported program's module refuses train())
            data = _convert_nhwc(torch, litert_torch, nhwc, (h, w, c), isinstance(module, _Singles))
    except Exception as err:  # noqa: BLE001 - the converter raises anything
        reason = _first_line(err)
        errs = [ln for ln in log if "error" in ln.lower()]
        if errs:
            reason += f" ({errs[0].strip()[:200]})"
        raise ConvertError(
            f"litert-torch cannot convert the model ({type(err).__name__}: {reason}). An op "
            f"LiteRT lacks must be replaced in the model. Received: path={os.fspath(model)}"
        ) from None
    data = bytes(data)
    logits = outputs_logits(data)

    def reference(x: np.ndarray) -> np.ndarray:
        """NHWC model input (float32) -> PyTorch's probabilities (float64)."""
        return torch_probabilities(module, x, logits)

    layers = tuple(
        name
        for name, m in raw.named_modules()
        if name and not name.startswith("_") and not list(m.children())
    )
    return ModelSource(
        framework="torch",
        source_model=p,
        signature=ModelSignature((h, w, c), class_count(int(out.shape[1]))),
        float32_tflite=data,
        reference=reference,
        outputs_logits=logits,
        layer_names=layers,
        recorded={
            "function": function,
            "torch": torch.__version__,
            "litert_torch": getattr(litert_torch, "__version__", "unknown"),
        },
    )
