"""aichaos.slo"""
