"""The proxy world: a small, fully known stand-in for Stable Diffusion and for an artist's style.

Real SD weights are not available to the project, so protection efficacy is measured on a model the project
trains itself, in exactly the diffusers SD layout, on procedural art whose style labels are known:

- `engine.proxy.styles`: the art generator (`render`, `STYLES`, `TRAINING_STYLES`, `HELD_OUT_STYLE`, captions);
- `engine.proxy.data`: seed ranges per use and data sets;
- `engine.proxy.tokenizer`: the CLIPTokenizer files (one token per caption word);
- `engine.proxy.classifier`: the style judge (`load_judge`);
- `engine.proxy.train`: trains and exports the proxy StableDiffusionPipeline.

Whether a proxy model is good enough to measure protections on is `engine.evaluation.sanity`'s check (it
runs the evaluation's mimic, so it lives with the evaluation).

This package file imports nothing heavy: the generator needs only numpy.
"""

from engine.proxy.styles import HELD_OUT_STYLE, STYLES, TRAINING_STYLES, caption, render

__all__ = ["HELD_OUT_STYLE", "STYLES", "TRAINING_STYLES", "caption", "render"]
