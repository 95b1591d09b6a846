"""StyleGAN-NADA: CLIP-guided domain adaptation of a StyleGAN2 generator."""
