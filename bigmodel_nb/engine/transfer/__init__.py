"""Transfer learning: start from pretrained weights, replace the head, freeze and unfreeze, export.

    prepare(model, from_="pretrained.safetensors", new_head=5, freeze="convs.*")
"""
from .export import ExportResult, export
from .heads import (
                    FreezeResult,
                    TransferSetup,
                    Unfreeze,
                    class_subset,
                    find_head,
                    freeze,
                    prepare,
                    replace_head,
                    trainable_counts,
                    unfreeze,
)
from .pretrained import LoadResult, load_from

__all__ = ["ExportResult", "FreezeResult", "LoadResult", "TransferSetup", "Unfreeze", "class_subset", "export",
           "find_head", "freeze", "load_from", "prepare", "replace_head", "trainable_counts", "unfreeze"]
