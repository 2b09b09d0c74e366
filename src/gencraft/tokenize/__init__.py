"""gencraft.tokenize"""
