"""Looking inside a model: `%summary` (parameters, memory), `%grads` (gradient flow), `%attention`
(attention maps) and `%lr_find` (the learning-rate range test). Import the module you need:

    from bigmodel_nb.engine.inspect.summary import summarize
"""
