"""AntiPure (arXiv 2509.13922): a denoising-loss attack made to survive diffusion purification.

The paper's equations are not public; this is the formulation of methods.md §2, every choice a
parameter so ablations can switch it:

    maximize  L_sem - λ_f · L_PFG - λ_t · L_ETG - λ_e · L_latent

- L_sem: the ASPL/AdvDM denoising loss over the whole training range of t.
- Purifier model: SDEdit at strength s (drawn per step from [s_min, s_max]) estimated in one step:
  z0_hat = predict_x0(z_{t*}) with t* = s·T, x_hat = D(z0_hat).
- PFG (Patch-wise Frequency Guidance): per p×p patch DCT-II; keep the high band u + v >= k. "match"
  (the spec's first choice) penalizes ||M ⊙ (DCT(x_hat) - DCT(x'))||^2 so the purified image keeps the
  protection's high frequencies; "contrast" instead maximizes ||M ⊙ (DCT(x_hat(x')) - DCT(x_hat(x)))||^2;
  "grid" pulls the purified image's high band toward a fixed grid pattern g shared by every image of the
  set, ||M ⊙ (DCT(x_hat) - DCT(g))||^2; "grid_latent" (default) pulls the purified latent z0_hat toward
  E(g): the paper's figures show a grid that purification keeps and customization amplifies, and a change
  that points the same way in every image is what a mimic learns from a set (issue 28).
- ETG (Erroneous Timestep Guidance): for t in the purifier's band [1, t*], pull the model's prediction at
  t toward its (stop-gradient) prediction at the wrong timestep t' = min(t + Δ, T - 1) ("wrong_timestep",
  the spec's first choice), or maximize the denoising error only inside the band ("band_error"), or pull
  the model's x0 estimate at every t of the band toward the grid latent E(g) ("grid_band", default): each
  step of the purifier's denoising chain, not only its first, then points to the grid.
- Latent term (off by default, λ_e = 0): pull E(x') itself toward the latent of a flat gray image (PhotoGuard's
  target) or of the grid, ||E(x') - E(target)||^2: an unpurified mimic trains on E(x'), which neither guidance
  term reaches (issue 28's first direction: the encoder is latent diffusion's weak point).
- The grid g: Mist's texture at an 8-px period, by default in grey in all three channels ("luma"), not in
  Mist's colours: JPEG halves chroma, and the grey grid's mimics drew further from the style (the Fréchet
  distance) unpurified and after JPEG 75 on the tuning split.
- Grid share a (default ½): δ = a·ε·sign(g − ½) + r with |r| ≤ (1 − a)·ε, the optimizer moving only r (a
  per-pixel box, delta_bounds, that engine.protect projects every step into). The grid's sign alone beat every
  optimized attack on the proxy; started there but free (grid_start), the optimizer walked off it (issue 28).
  Half of ε on the grid, half the optimizer's: chosen on the worst case over none, JPEG 75 and SDEdit 0.2 on
  three tuning render sets (¾ lost damage after SDEdit; 0, ¼ and ½ were level on accuracy, ½ kept the
  mimic furthest from the style).
- Learned tile (off by default, grid_learn_steps = 0): the grid's 16-px tile learned over the set's clean images
  before the first is protected (_learned_tile: sign-PGD from Mist's pattern's sign, on the denoising error or on
  the latents' move, alternating plain and one-step-purified latents), kept on the set's pool so every image
  shares it; the share and both grid terms then use it. It survives SDEdit far better than Mist's pattern but
  loses the unpurified and JPEG cells to it, so its worst case over the purifiers is behind (docs/efficacy.md).
- The defaults (grid_latent at λ_f = 4, grid_band at λ_t = 1, the luma grid, grid share ½) were chosen on
  the proxy world's tuning splits, where the spec's first choices took the base term's damage away
  (docs/methods.md, docs/efficacy.md).
- λ_f, λ_t are relative weights: with normalize=True each term is first scaled so its gradient norm
  matches L_sem's, both norms averaged over `normalize_draws` fixed (t, noise, s) draws. The norms are
  taken at a random δ of the strength's size, not at δ = 0: there the contrast term and its gradient
  vanish (x_hat(x') = x_hat(x)) and the scale would be set by floating-point residue.
- PFG's match term stops the gradient at x' (pfg_stop_gradient): the optimizer pulls the purified image
  toward the protection's high frequencies instead of lowering the distance by removing them from x'.
- Under EOT the contrast variant purifies the clean image through the same transform as x'
  (MethodContext.transform), so both sides differ only by δ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from engine import diffusion as D
from engine.methods.base import MethodContext, ProtectionMethod, setting
from engine.methods.mist import target_pattern
from engine.surrogate import applied_if_tuned, aspl_between_steps


PFG_VARIANTS = ("match", "contrast", "grid", "grid_latent")
ETG_VARIANTS = ("wrong_timestep", "band_error", "grid_band")
LATENT_TARGETS = ("gray", "grid")
GRID_COLORS = ("color", "luma")
TERMS = ("semantic", "pfg", "etg", "latent")
TILE_OBJECTIVES = ("semantic", "latent")
UNIT_SCALES = {"pfg": 1.0, "etg": 1.0, "latent": 1.0}


@dataclass
class AntiPureParams:
    use_pfg: bool = setting(True, "the purification-surviving frequency term (PFG)", bool)
    use_etg: bool = setting(True, "the erroneous-timestep term (ETG)", bool)
    lambda_pfg: float = setting(4.0, "weight λ_f of PFG, relative to the semantic term", float, 0.0, 1000.0)
    lambda_etg: float = setting(1.0, "weight λ_t of ETG, relative to the semantic term", float, 0.0, 1000.0)
    normalize: bool = setting(True, "scale each term's gradient to the semantic term's first", bool)
    normalize_draws: int = setting(8, "(t, noise, s) draws the step-0 gradient norms are averaged over", int, 1, 1000)
    normalize_seed: int = setting(7, "seed of those draws", int, 0, 2**31 - 1)
    pfg_variant: str = setting("grid_latent", "what PFG compares (module docstring)", str, choices=PFG_VARIANTS)
    pfg_stop_gradient: bool = setting(True, "match: sg[x'] (module docstring); false for the ablation", bool)
    etg_variant: str = setting("grid_band", "what ETG pulls toward (module docstring)", str, choices=ETG_VARIANTS)
    lambda_latent: float = setting(0.0, "weight λ_e of the latent term E(x') → target (0: off), relative to the semantic "
                                        "term", float, 0.0, 1000.0)
    latent_target: str = setting("gray", "what the latent term pulls E(x') toward", str, choices=LATENT_TARGETS)
    patch_size: int = setting(8, "px of PFG's DCT patches", int, 2, 64)
    grid_period: int = setting(8, "px of the grid pattern the grid variants pull toward", int, 2, 1024)
    grid_start: bool = setting(False, "start δ at the grid's sign, ε·sign(g − ½), instead of at 0", bool)
    grid_share: float = setting(0.5, "share a of ε held on the grid's sign: δ = a·ε·sign(g − ½) + r, the optimizer "
                                      "moving only r, |r| ≤ (1 − a)·ε (0: off)", float, 0.0, 1.0)
    grid_learn_steps: int = setting(0, "steps of a sign-PGD that learns the grid's tile (2 × grid_period px) over the "
                                       "set's clean images before the first is protected, from Mist's pattern's sign; "
                                       "0: Mist's fixed pattern", int, 0, 1000)
    grid_learn_objective: str = setting("semantic", "what the tile's learning raises over the set: the denoising "
                                                    "error, or how far the latent moves from the clean one's",
                                        str, choices=TILE_OBJECTIVES)
    grid_color: str = setting("luma", "the grid's channels: Mist's colour pattern, or its grey in all three (luma: "
                                       "no chroma for JPEG's subsampling to halve)", str, choices=GRID_COLORS)
    high_band_k: int | None = setting(None, "PFG keeps DCT bands u + v ≥ k; none: patch_size // 2", int, 0, 126,
                                      optional=True)
    etg_offset: int = setting(500, "Δ of ETG's wrong timestep, in training timesteps", int, 1, 999)
    purify_strength_min: float = setting(0.05, "weakest SDEdit strength the purifier model draws", float, 0.0, 1.0)
    purify_strength_max: float = setting(0.3, "strongest SDEdit strength the purifier model draws", float, 0.0, 1.0)
    # Optional ASPL mode (methods.md §2): this many LoRA tunings of the surrogate on the protected image(s),
    # evenly spaced over the steps, each of aspl_tune_steps optimizer steps (engine.surrogate). 0: off.
    aspl_rounds: int = setting(0, "LoRA tunings of a surrogate on the protected images (ASPL mode); 0: off", int, 0, 1000)
    aspl_tune_steps: int = setting(3, "optimizer steps of each of those tunings", int, 0, 1000)


def dct_matrix(n: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Orthonormal DCT-II matrix C (n×n): DCT(x) = C @ x for a column vector x."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    c = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    c[0] /= math.sqrt(2.0)
    return c.to(device=device, dtype=dtype)




def patch_dct(x: torch.Tensor, p: int) -> torch.Tensor:
    """2-D DCT-II of every p×p patch: [B, C, H, W] -> [B, C, ⌈H/p⌉, ⌈W/p⌉, p, p].

    Sides that are not multiples of p are padded by reflection (replication when too short), so the
    last row and column of patches see a continuation of the image, not an artificial edge.
    """
    ph, pw = (-x.shape[-2]) % p, (-x.shape[-1]) % p
    if ph or pw:
        mode = "reflect" if (ph < x.shape[-2] and pw < x.shape[-1]) else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    b, c, h, w = x.shape
    patches = x.reshape(b, c, h // p, p, w // p, p).permute(0, 1, 2, 4, 3, 5)
    m = dct_matrix(p, x.device, x.dtype)
    return m @ patches @ m.T


def high_band_mask(p: int, k: int, device=None) -> torch.Tensor:
    """M[u, v] = 1 where u + v >= k: the high-frequency coefficients of a p×p patch."""
    u = torch.arange(p, device=device)[:, None]
    v = torch.arange(p, device=device)[None, :]
    return ((u + v) >= k).float()


def high_frequency_distance(a: torch.Tensor, b: torch.Tensor, p: int, k: int) -> torch.Tensor:
    """Mean over patches of ||M ⊙ (DCT(a) - DCT(b))||^2."""
    diff = patch_dct(a - b, p)  # the DCT is linear
    masked = diff * high_band_mask(p, k, a.device)
    return masked.pow(2).sum(dim=(-1, -2)).mean()


def grid_pattern(height: int, width: int, period: int, color: str) -> np.ndarray:
    """The grid g the grid variants pull toward, [3, h, w] in [0, 1]: Mist's texture (engine.methods.mist's
    target_pattern) in colour, or for "luma" its grey (the colour pattern's first channel) in all three."""
    pattern = target_pattern(height, width, period)
    return pattern[:1].repeat(3, axis=0) if color == "luma" else pattern


def tile_over(tile: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A [1, c, p, p] tile repeated from the top-left corner over height × width (cropped at the far edges)."""
    _, _, th, tw = tile.shape
    reps = (1, 1, -(-height // th), -(-width // tw))
    return tile.repeat(*reps)[..., :height, :width]


def grid_signs(grid: torch.Tensor) -> torch.Tensor:
    """±1 where the grid is at least / below its middle grey: the Grid ±ε control's δ / ε, and grid_start's."""
    return torch.where(grid >= 0.5, 1.0, -1.0).to(grid)


def etg_target_timestep(t: torch.Tensor, offset: int, num_train_timesteps: int) -> torch.Tensor:
    return torch.clamp(t + offset, max=num_train_timesteps - 1)


def etg_target(model, z_t: torch.Tensor, t: torch.Tensor, offset: int, cond: torch.Tensor) -> torch.Tensor:
    """sg[eps(z_t, t')]: the model's noise prediction as if z_t sat at the wrong timestep t' = t + Δ."""
    t_wrong = etg_target_timestep(t, offset, model.num_train_timesteps)
    with torch.no_grad():
        return D.predict_eps(model, z_t, t_wrong, D.unet(model, z_t, t_wrong, cond))


class AntiPure(ProtectionMethod):
    name = "antipure"
    label = "AntiPure (built to survive purification)"
    summary = ("Aimed at the clean-up mimics use before training (light SDEdit). On the project's test model it "
               "harms a mimic only at strong settings (32 levels), level with the other attacks there "
               "(docs/efficacy.md).")
    Params = AntiPureParams

    def params_problem(self):
        p = self.params
        if p.purify_strength_min > p.purify_strength_max:
            return (f"purify_strength_min ({p.purify_strength_min:g}) must not be above purify_strength_max "
                    f"({p.purify_strength_max:g})")
        if p.high_band_k is not None and p.high_band_k > 2 * (p.patch_size - 1):
            return (f"high_band_k ({p.high_band_k}) must be at most {2 * (p.patch_size - 1)} for {p.patch_size}-px "
                    "patches (no DCT band lies beyond it)")
        return None

    def _terms(self, ctx: MethodContext, x: torch.Tensor, generator: torch.Generator, z: torch.Tensor | None = None,
               leaves: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The three terms at x (z = E(x) if given). leaves: filled with one latent leaf per term, each feeding only
        that term's slice of the UNet batch, so one backward of the sum gives every term's own ∂/∂z."""
        p = self.params
        model = ctx.model
        big_t = model.num_train_timesteps
        z = D.encode(model, x) if z is None else z
        n = ctx.timesteps_per_step

        # One batched UNet call with a graph: [semantic t's | purifier t* | ETG t's].
        t_sem = D.sample_timesteps(model, n, generator)
        s = p.purify_strength_min + (p.purify_strength_max - p.purify_strength_min) * float(
            torch.rand((), generator=generator, device=generator.device)
        )
        t_star = max(1, min(big_t - 1, int(round(s * big_t))))
        parts_t = [t_sem]
        if p.use_pfg:
            parts_t.append(torch.full((1,), t_star, device=model.device, dtype=torch.long))
        if p.use_etg:
            t_etg = D.sample_timesteps(model, n, generator, 1, t_star + 1)
            parts_t.append(t_etg)
        t_all = torch.cat(parts_t)
        noise = D.randn_like(z.expand(t_all.shape[0], -1, -1, -1), generator)
        zb = z.expand(t_all.shape[0], -1, -1, -1)
        if leaves is not None:
            # Samples of a UNet batch do not mix (per-sample norms and attention): a leaf per term keeps them apart.
            sizes = {"semantic": n, "pfg": 1 if p.use_pfg else 0, "etg": n if p.use_etg else 0}
            pieces = []
            for name, size in sizes.items():
                if size:
                    leaves[name] = z.detach().clone().requires_grad_(True)
                    pieces.append(leaves[name].expand(size, -1, -1, -1))
            zb = torch.cat(pieces)
        z_t = D.add_noise(model, zb, noise, t_all)
        out = D.unet(model, z_t, t_all, ctx.cond)

        terms: dict[str, torch.Tensor] = {}
        terms["semantic"] = ((out[:n] - D.target(model, zb[:n], noise[:n], t_sem)) ** 2).mean()
        if p.lambda_latent > 0:
            # What an unpurified mimic trains on is E(x') itself: pull it toward a target the whole set shares.
            z_lat = z
            if leaves is not None:
                leaves["latent"] = z_lat = z.detach().clone().requires_grad_(True)
            terms["latent"] = ((z_lat - self._latent_target(ctx)) ** 2).mean()
        i = n
        if p.use_pfg:
            ts = t_all[i : i + 1]
            z0_hat = D.predict_x0(model, z_t[i : i + 1], ts, out[i : i + 1])
            k = p.high_band_k if p.high_band_k is not None else p.patch_size // 2
            # Every variant but grid_latent compares the purified image: one decode, none for grid_latent.
            x_hat = D.decode(model, z0_hat) if p.pfg_variant != "grid_latent" else None
            if p.pfg_variant == "grid_latent":
                terms["pfg"] = ((z0_hat - self._grid(ctx)[1]) ** 2).mean()
            elif p.pfg_variant == "grid":
                terms["pfg"] = high_frequency_distance(x_hat, self._grid(ctx)[0], p.patch_size, k)
            elif p.pfg_variant == "contrast":
                with torch.no_grad():
                    # Under EOT x is T(x'): purify T(x_clean), so the two sides differ only by δ.
                    clean = ctx.transform(ctx.x_clean) if ctx.transform is not None else ctx.x_clean
                    z_clean = D.encode(model, clean)
                    zc_t = D.add_noise(model, z_clean, noise[i : i + 1], ts)
                    zc0 = D.predict_x0(model, zc_t, ts, D.unet(model, zc_t, ts, ctx.cond))
                    x_hat_clean = D.decode(model, zc0)
                # Maximized, so it enters the total with a minus sign below.
                terms["pfg"] = -high_frequency_distance(x_hat, x_hat_clean, p.patch_size, k)
            else:
                reference = x.detach() if p.pfg_stop_gradient else x
                terms["pfg"] = high_frequency_distance(x_hat, reference, p.patch_size, k)
            i += 1
        if p.use_etg:
            t_e = t_all[i:]
            z_te = z_t[i:]
            if p.etg_variant == "grid_band":
                z0_band = D.predict_x0(model, z_te, t_e, out[i:])
                terms["etg"] = ((z0_band - self._grid(ctx)[1]) ** 2).mean()
            elif p.etg_variant == "band_error":
                err = ((out[i:] - D.target(model, zb[i:], noise[i:], t_e)) ** 2).mean()
                terms["etg"] = -err
            else:
                wrong = etg_target(model, z_te, t_e, p.etg_offset, ctx.cond)
                eps = D.predict_eps(model, z_te, t_e, out[i:])
                terms["etg"] = ((eps - wrong) ** 2).mean()
        return terms

    def _latent_target(self, ctx: MethodContext) -> torch.Tensor:
        """E(target) of the latent term: a flat mid-gray image (PhotoGuard's target) or the grid."""
        if self.params.latent_target == "grid":
            return self._grid(ctx)[1]
        if "antipure_gray_latent" not in ctx.cache:
            with torch.no_grad():
                ctx.cache["antipure_gray_latent"] = D.encode(ctx.model, torch.full_like(ctx.x_clean, 0.5))
        return ctx.cache["antipure_gray_latent"]

    def _grid(self, ctx: MethodContext) -> tuple[torch.Tensor, torch.Tensor]:
        """The grid g (pixels) and E(g) the grid variants pull toward: one pattern for every image of a size, so
        the whole set points the same way. Made once per job. With grid_learn_steps, g is the learned tile's
        black and white (½ ± ½), tiled from the top-left corner."""
        if "antipure_grid" not in ctx.cache:
            _, _, h, w = ctx.x_clean.shape
            if self.params.grid_learn_steps > 0:
                grid = 0.5 + 0.5 * tile_over(self._learned_tile(ctx), h, w).expand(1, 3, h, w)
            else:
                grid = torch.from_numpy(grid_pattern(h, w, self.params.grid_period, self.params.grid_color))[None]
            grid = grid.to(device=ctx.x_clean.device, dtype=ctx.x_clean.dtype)
            with torch.no_grad():
                ctx.cache["antipure_grid_latent"] = D.encode(ctx.model, grid)
            ctx.cache["antipure_grid"] = grid
        return ctx.cache["antipure_grid"], ctx.cache["antipure_grid_latent"]

    def _learned_tile(self, ctx: MethodContext) -> torch.Tensor:
        """The set's tile τ ∈ {±1}^[1, c, 2p, 2p] (c = 1 for the luma grid, 3 for colour): learned once per set (kept
        on the pool; one image alone learns on itself), by sign-PGD on _tile_loss over every clean image with the
        tile at the full ε added, x_i + ε·τ, from Mist's pattern's sign. Odd steps score the latent after
        the purifier model (one-step SDEdit at a strength from [s_min, s_max]), even steps the plain latent, so
        the tile is chosen to work with and without purification. Deterministic: its own
        seeded draws, the images in index order."""
        pool = ctx.pool
        shared = getattr(pool, "shared", None)
        if shared is not None and "antipure_tile" in shared:
            return shared["antipure_tile"]
        p = self.params
        model, dev = ctx.model, ctx.x_clean.device
        size = 2 * p.grid_period
        pattern = torch.from_numpy(grid_pattern(size, size, p.grid_period, p.grid_color))[None].to(dev)
        tau = grid_signs(pattern[:, :1] if p.grid_color == "luma" else pattern)
        images = [pool.clean[k].to(dev) for k in sorted(pool.clean)] if pool is not None and pool.clean else [ctx.x_clean]
        generator = torch.Generator(device=dev).manual_seed(p.normalize_seed + 1)
        step_size = 2.0 / max(1, min(p.grid_learn_steps, 8))  # a sign may flip within the first few steps
        n = max(1, ctx.timesteps_per_step)
        for step in range(p.grid_learn_steps):
            ctx.job.check()
            tau = tau.detach().requires_grad_(True)
            for x in images:
                _, _, h, w = x.shape
                x_adv = (x + ctx.eps * tile_over(tau, h, w).expand_as(x)).clamp(0, 1)
                (self._tile_loss(ctx, x, x_adv, generator, purified=step % 2 == 1, n=n) / len(images)).backward()
            with torch.no_grad():
                tau = (tau + step_size * tau.grad.sign()).clamp(-1, 1)
        tau = grid_signs(0.5 + 0.5 * tau.detach())
        if shared is not None:
            shared["antipure_tile"] = tau
        return tau

    def _tile_loss(self, ctx: MethodContext, x: torch.Tensor, x_adv: torch.Tensor, generator: torch.Generator,
                   purified: bool, n: int) -> torch.Tensor:
        """What the tile's sign-PGD raises for one clean image x and x_adv = x + ε·τ: the denoising error at n random t
        of E(x_adv) ("semantic"), or the squared distance of E(x_adv) from E(x) ("latent"). With `purified`, of the
        latent the purifier model leaves (one-step SDEdit at a strength drawn from [s_min, s_max]; for "latent"
        both sides through the same noise)."""
        p, model = self.params, ctx.model
        z = D.encode(model, x_adv)
        latent = p.grid_learn_objective == "latent"
        if latent:
            with torch.no_grad():
                z_ref = D.encode(model, x)
        if purified:
            s = p.purify_strength_min + (p.purify_strength_max - p.purify_strength_min) * float(
                torch.rand((), generator=generator, device=generator.device))
            t_star = torch.full((1,), max(1, min(model.num_train_timesteps - 1, round(s * model.num_train_timesteps))),
                                device=model.device)
            noise = D.randn_like(z, generator)

            def purify(latent_in):
                z_s = D.add_noise(model, latent_in, noise, t_star)
                return D.predict_x0(model, z_s, t_star, D.unet(model, z_s, t_star, ctx.cond))

            z = purify(z)
            if latent:
                with torch.no_grad():
                    z_ref = purify(z_ref)
        if latent:
            return ((z - z_ref) ** 2).mean()
        t = D.sample_timesteps(model, n, generator)
        return D.denoising_loss(model, z, ctx.cond, t, D.randn_like(z.expand(n, -1, -1, -1), generator))

    def initial_delta(self, ctx: MethodContext) -> torch.Tensor | None:
        """With grid_start, δ starts where the Grid ±ε control ends: the grid's sign at the full strength (with a
        grid_share, the corner of its box on that side); with only a grid_share, at its fixed part a·ε·sign."""
        p = self.params
        if not (p.grid_start or p.grid_share > 0):
            return None
        share = 1.0 if p.grid_start else p.grid_share
        return share * ctx.eps * grid_signs(self._grid(ctx)[0]).expand_as(ctx.x_clean)

    def delta_bounds(self, ctx: MethodContext) -> tuple[torch.Tensor, torch.Tensor] | None:
        """With a grid_share a, δ stays within (1 − a)·ε of a·ε·sign(g − ½): the grid's sign is kept at every pixel
        (for a ≥ ½) whatever the optimizer does, which grid_start alone let it walk away from (issue 28)."""
        a = self.params.grid_share
        if a <= 0:
            return None
        fixed = a * ctx.eps * grid_signs(self._grid(ctx)[0]).expand_as(ctx.x_clean)
        free = (1.0 - a) * ctx.eps
        return fixed - free, fixed + free

    def setup(self, ctx: MethodContext) -> None:
        ctx.cache["antipure_scales"] = self.normalization_scales(ctx) if self.params.normalize else dict(UNIT_SCALES)

    def gradient_norms(self, ctx: MethodContext, draws: int | None = None, seed: int | None = None) -> dict[str, float]:
        """Each term's gradient norm w.r.t. the image, averaged over `draws` fixed (t, noise, s) draws.

        Measured at x_clean + a random ±ε/2 δ (fixed seed): at δ = 0 the contrast term is identically
        0 and its gradient is floating-point residue. One draw is not enough: the semantic norm alone
        varies by well over 10× between draws on the tiny model.
        """
        p = self.params
        draws = max(1, p.normalize_draws if draws is None else draws)
        seed = p.normalize_seed if seed is None else seed
        g0 = ctx.fresh_generator(seed)
        noise = torch.rand(ctx.x_clean.shape, generator=g0, device=g0.device).to(ctx.x_clean.device) * 2 - 1
        x0 = (ctx.x_clean + 0.5 * ctx.eps * noise).clamp(0, 1)
        with torch.no_grad():
            z0 = D.encode(ctx.model, x0)
        sums: dict[str, float] = {}
        for i in range(draws):
            ctx.job.check()  # a draw is a few forward/backward passes: Stop waits at most one
            names, grads = self._term_gradients(ctx, x0, z0, ctx.fresh_generator(seed * 1000 + i))
            for k, g in zip(names, grads):
                sums[k] = sums.get(k, 0.0) + (float(g.norm()) if g is not None else 0.0)
        return {k: v / draws for k, v in sums.items()}

    def _term_gradients(self, ctx: MethodContext, x0: torch.Tensor, z0: torch.Tensor, generator: torch.Generator):
        """Each term's gradient w.r.t. the image at x0 (z0 = E(x0)): one backward through the UNet and decoder
        for all three (a latent leaf per term), then one encoder backward per term with its ∂/∂z. The UNet and
        encoder graphs are never held together (as in the plan's two-pass backward, engine.protect), and the
        UNet's backward runs once instead of once per term."""
        x = x0.clone().requires_grad_(True)
        leaves: dict[str, torch.Tensor] = {}
        terms = self._terms(ctx, x, generator, z0, leaves)
        names = [k for k in TERMS if k in terms]
        total = sum(terms[k] for k in names)
        grads = torch.autograd.grad(total, [leaves[k] for k in names] + [x], allow_unused=True)
        g_x = grads[-1]  # only PFG reads x directly (pfg_stop_gradient off)
        del terms, total
        x_enc = x0.detach().clone().requires_grad_(True)
        z_enc = D.encode(ctx.model, x_enc)
        out = []
        for j, (k, g_z) in enumerate(zip(names, grads[:-1])):
            g = torch.autograd.grad(z_enc, x_enc, g_z, retain_graph=j < len(names) - 1)[0] if g_z is not None else None
            if k == "pfg" and g_x is not None:
                g = g_x if g is None else g + g_x
            out.append(g)
        return names, out

    def normalization_scales(self, ctx: MethodContext, draws: int | None = None, seed: int | None = None) -> dict[str, float]:
        """{"pfg": s_f, "etg": s_t, "latent": s_e} so that s·‖∇L_term‖ matches ‖∇L_sem‖ on average: the λ's are
        then relative to the base term, whatever the model and image size."""
        scales = dict(UNIT_SCALES)
        p = self.params
        if not (p.use_pfg or p.use_etg or p.lambda_latent > 0):
            return scales
        norms = self.gradient_norms(ctx, draws, seed)
        for k in UNIT_SCALES:
            if norms.get(k, 0.0) > 0:
                scales[k] = norms["semantic"] / norms[k]
        return scales

    def tunes_on_set(self) -> bool:
        return self.params.aspl_rounds > 0 or self.params.grid_learn_steps > 0  # the learned tile is the set's

    def between_steps(self, ctx, x_protected, step):
        aspl_between_steps(ctx, x_protected, step, self.params.aspl_rounds, self.params.aspl_tune_steps)

    def graph_scope(self, ctx: MethodContext):
        return applied_if_tuned(ctx)  # the ASPL mode's surrogate, once tuned

    def memory_profile(self, timesteps_per_step):
        """[semantic | purifier t* | ETG] in one UNet call with a graph, and the decoder for the purifier model
        (PFG); the set-up's normalisation draws keep the same graphs, two-pass when the plan is."""
        from engine.plan import MemoryProfile

        p = self.params
        batch = timesteps_per_step + (1 if p.use_pfg else 0) + (timesteps_per_step if p.use_etg else 0)
        decoder = p.use_pfg and p.pfg_variant != "grid_latent"
        return MemoryProfile(unet_batch=batch, decoder=decoder, tuning_batch=1 if p.aspl_rounds else 0)

    def loss_from_latent(self, ctx, z, x, generator):
        p = self.params
        scales = ctx.cache.get("antipure_scales", UNIT_SCALES)
        with applied_if_tuned(ctx):
            terms = self._terms(ctx, x, generator, z)
        total = terms["semantic"]
        if "pfg" in terms:
            total = total - p.lambda_pfg * scales["pfg"] * terms["pfg"]
        if "etg" in terms:
            total = total - p.lambda_etg * scales["etg"] * terms["etg"]
        if "latent" in terms:
            total = total - p.lambda_latent * scales["latent"] * terms["latent"]
        return total, {k: float(v.detach()) for k, v in terms.items()}
