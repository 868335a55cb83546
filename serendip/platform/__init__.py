"""Platform adapters: the only package that imports mlflow, feast, kserve, kfp or tritonclient.

Modules are imported on demand (``from serendip.platform import registry``), so importing this
package costs nothing and pulls in no platform library.
"""
