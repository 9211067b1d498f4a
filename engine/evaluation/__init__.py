"""`artveil eval`: does a protection still hurt a mimic after purification?

protect a set → purify it with each chosen purifier → customize (LoRA) on what the mimic would train on →
generate → score against the clean-trained control; optionally the editing path (img2img edits of each
image with its own prompt, scored against the edit of the clean image). Stages keep their outputs in the
run folder and are skipped when run again (engine.evaluation.run). methods.md §6.
"""

from engine.evaluation.run import EvalConfig, run_evaluation

__all__ = ["EvalConfig", "run_evaluation"]
