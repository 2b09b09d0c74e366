"""gencraft.generate"""
