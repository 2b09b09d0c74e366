"""gencraft.post"""
