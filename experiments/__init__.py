"""aichaos.experiments"""
