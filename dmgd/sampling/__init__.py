"""Sampling: frozen class-conditional DiT backbones and the guided reverse process."""
