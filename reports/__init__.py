"""aichaos.reports"""
