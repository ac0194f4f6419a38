"""aichaos.scenarios"""
