"""The policy documents and their JSON Schemas, shipped with seg2b as package data (installed as
`seg2b_policies`): the default policy folder of every run, read through importlib.resources."""
