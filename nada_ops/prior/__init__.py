"""clip2latent (Pinkney & Li, 2022): a diffusion prior that maps a CLIP embedding to a StyleGAN
latent, trained without text from (image embedding, w) pairs the generator itself makes.

- :mod:`.config`     architecture + diffusion settings (presets: the paper's ``mid``)
- :mod:`.network`    the causal-transformer prior network
- :mod:`.diffusion`  cosine schedule, training loss, respaced guided sampling
- :mod:`.model`      :class:`LatentPrior`, the loaded prior passed between nodes
- :mod:`.formats`    our .safetensors format and clip2latent's released .ckpt + .yaml
- :mod:`.pairs`      (embedding, w) pairs streamed to disk in resumable shards
- :mod:`.trainer`    training with EMA, checkpoints, resume and CLIP validation
- :mod:`.sampler`    text -> latents: guidance, truncation, style mixing, CLIP re-ranking

Because StyleGAN-NADA keeps adapted generators in the source's latent space, a prior trained
on the source generator drives every generator adapted from it.
"""
