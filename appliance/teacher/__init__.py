"""`forge teacher run`: a teacher's graded answers to Forge's stage prompts, as a data
package (the connected side)."""
