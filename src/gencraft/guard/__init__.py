"""gencraft.guard"""
