"""gencraft.server"""
