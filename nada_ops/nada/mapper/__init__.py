"""Latent-mapper "mining" (StyleGAN-NADA sec. 4.3, eq. 5): a StyleCLIP latent mapper trained on
an adapted generator moves every latent to where the generator shows the target.

- :mod:`.network`: the mapper (per-level MLPs, PixelNorm, residual step) and its config;
- :mod:`.train`: losses (CLIP, latent L2, embedding-norm eq. 5) and the trainer;
- :mod:`.ranger`: the Ranger optimizer StyleCLIP trains mappers with;
- :mod:`.files`: our safetensors format and StyleCLIP / NADA ``.pt`` checkpoints (read safely).
"""
from .files import MapperFileError, MapperHandle, load_mapper, save_mapper
from .network import LEVELS, LatentMapper, MapperConfig, MapperConfigError, level_rows, new_mapper
from .train import (MapperGuidance, MapperResult, MapperSettings, MapperStep, direction_guidance, norm_loss,
                    norm_statistics, text_guidance, train_mapper)

__all__ = ["MapperFileError", "MapperHandle", "load_mapper", "save_mapper", "LEVELS", "LatentMapper",
           "MapperConfig", "MapperConfigError", "level_rows", "new_mapper", "MapperGuidance", "MapperResult",
           "MapperSettings", "MapperStep", "direction_guidance", "norm_loss", "norm_statistics", "text_guidance",
           "train_mapper"]
