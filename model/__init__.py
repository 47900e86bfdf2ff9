"""hataori's models: the GPT and what it is made of (model core), and the training that shapes it
(pretraining, fine-tuning, evaluation). No Prefect anywhere below this package."""

# Marks this `model` as hataori's: `pipeline` refuses to run against another package of that name.
__hataori__ = True
