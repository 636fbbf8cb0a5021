"""Fair comparisons: optimizers on one model with the same weights and batches (`optimizers`), and
optimizer paths on 2-D test functions (`landscapes`).

    from bigmodel_nb.engine.compare.optimizers import OptimizerComparison
"""
