"""One module per rule file of the workflow (rules/{samples,neurons,perturb,figures,model,synth}.smk), one function
per rule, named after it: paths and settings in, files out. The workflow's scripts only unpack ``snakemake`` and
call their rule's function; the library below does the work."""
