"""gencraft.train"""
