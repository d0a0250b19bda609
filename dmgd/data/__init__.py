"""Datasets shipped with or read by dmgd (the embedded default: scikit-learn's digits)."""
