"""gencraft.data"""
