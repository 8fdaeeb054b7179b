"""Reconstruction attacks (gradient inversion, informed adversary, canary exposure)."""
