"""gencraft.backends"""
