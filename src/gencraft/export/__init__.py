"""gencraft.export"""
