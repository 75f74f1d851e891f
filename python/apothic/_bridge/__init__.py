"""The only package that imports `apothic._core` (house style C)."""
