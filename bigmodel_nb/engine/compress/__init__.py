"""Compression: prune, quantize, fine-tune and distill, measured stage by stage in an honest report.

    compress(model, "digits", steps=[Prune(0.5, structured=True), Quantize("int8")]).table()
"""
from .distill import Distiller, distillation_loss
from .pipeline import QUANT_MODES, Distill, Finetune, Prune, Quantize, compress, parse_steps, steps_from_flags
from .report import CompressionReport, count_weights, flat_state, measure_latency, write_weights

__all__ = ["Prune", "Finetune", "Quantize", "Distill", "CompressionReport", "compress", "parse_steps",
           "steps_from_flags", "measure_latency", "count_weights", "write_weights", "flat_state", "QUANT_MODES",
           "distillation_loss", "Distiller"]
