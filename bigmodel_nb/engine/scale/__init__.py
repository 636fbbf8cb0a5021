"""Past one device: Ray Train workers (`distributed`, optional: ``pip install bigmodel-nb[distributed]``)
and model FLOP utilisation on GPUs (`flops`). The single-device switches (torch.compile, activation
checkpointing, out-of-memory handling, ``--batch-size auto``) are part of the core.

    from bigmodel_nb.engine.scale.distributed import DistributedRun
"""
