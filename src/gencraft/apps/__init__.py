"""gencraft.apps"""
