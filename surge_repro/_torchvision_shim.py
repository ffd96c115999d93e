"""Let a CUDA-built torchvision wheel import on a CPU-only torch.

The only torchvision wheel that matches torch 2.13.0 links libtorch_cuda; on the CPU build of torch its C++
extension cannot load, and torchvision's import then dies on two unguarded
``register_fake("torchvision::nms" / "qnms")`` calls ("operator torchvision::nms does not exist"). timm and
transformers import torchvision, so they die too.

``install()`` puts a meta-path hook in front of the import system. When torchvision is first imported it tries to
load the real extension; only if that fails does it define the two op schemas (no kernels), which is all the import
needs. Where the extension loads (CUDA torch on a GPU machine) the hook does nothing. Models, transforms and datasets
then work; ``torchvision.ops.nms`` and friends raise "Couldn't load custom C++ ops", which this project never uses.
"""

import glob
import importlib.machinery
import os
import sys


class _Hook:
    def find_spec(self, name, path=None, target=None):
        if name != "torchvision":
            return None
        sys.meta_path.remove(self)  # act once; the regular finders do the actual import
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or not spec.submodule_search_locations:
            return None
        import torch

        libs = glob.glob(os.path.join(list(spec.submodule_search_locations)[0], "_C*.so"))
        try:
            torch.ops.load_library(libs[0])
            return None  # the real ops load: nothing to do
        except Exception:
            pass
        lib = torch.library.Library("torchvision", "FRAGMENT")
        for op in ("nms", "qnms"):
            try:
                lib.define(op + "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            except RuntimeError:  # already defined
                pass
        globals()["_LIB"] = lib  # the registration lives as long as this object
        return None


def install() -> None:
    """Add the hook unless torchvision is already imported or the hook is already there."""
    if "torchvision" in sys.modules or any(isinstance(h, _Hook) for h in sys.meta_path):
        return
    sys.meta_path.insert(0, _Hook())
