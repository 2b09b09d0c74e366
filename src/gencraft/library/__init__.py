"""gencraft.library"""
