"""semseg_core: open-set instance segmentation (SemSeg, RA-L 2024) on PyTorch + torchvision.

`Predictor` and `Result` are imported on first attribute access (PEP 562), the one deferred import of the
package: `import semseg_core.constants` / `.config` / `.evaluation` (the bag scorer, evaluation scripts) stay free
of torch and the model, 0.001 s instead of ~2 s on this project's 2-core machines (measured with
`python -c "import time; t=time.perf_counter(); import semseg_core.constants; print(time.perf_counter()-t)"`
with this shim and with `from .predictor import Predictor, Result` here). An import error in the predictor
surfaces, unchanged, at `from semseg_core import Predictor`.
"""
__version__ = "0.1.0"

__all__ = ["Predictor", "Result", "__version__"]


def __getattr__(name):
    if name in ("Predictor", "Result"):
        from . import predictor
        return getattr(predictor, name)
    raise AttributeError(f"module 'semseg_core' has no attribute {name!r}")
