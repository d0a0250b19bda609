"""dmgd"""
