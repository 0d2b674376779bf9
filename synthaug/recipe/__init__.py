"""The recipe: one YAML file validated once into a typed `Recipe` (one strict section per stage) that every stage receives."""
