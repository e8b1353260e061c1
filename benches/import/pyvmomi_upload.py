#!/usr/bin/env python3
"""The reference second step of the two-step import: upload every OVF package under a
folder with pyvmomi's ImportVApp flow (CreateImportSpec, ImportVApp, HttpNfcLease, one
HTTP POST per disk, HttpNfcLeaseComplete), as the vSphere SDK samples do.

usage: pyvmomi_upload.py URL USER PASSWORD DATACENTER DATASTORE CLUSTER FOLDER TREE
(a simulator on loopback: its certificate is not verified)."""

import http.client
import os
import ssl
import sys
import time
import urllib.parse

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim


def main():
    url, user, pwd, dc, ds, cluster, folder, tree = sys.argv[1:9]
    u = urllib.parse.urlparse(url)
    si = SmartConnect(host=u.hostname, port=u.port or 443, user=user, pwd=pwd,
                      disableSslCertValidation=True)
    try:
        c = si.RetrieveContent()
        find = c.searchIndex.FindByInventoryPath
        datastore = find(f"/{dc}/datastore/{ds}")
        pool = find(f"/{dc}/host/{cluster}").resourcePool
        vm_folder = find(f"/{dc}/vm/{folder}")
        ctx = ssl._create_unverified_context()
        for root, _, files in sorted(os.walk(tree)):
            for ovf in sorted(f for f in files if f.endswith(".ovf")):
                desc = open(os.path.join(root, ovf)).read()
                name = ovf[:-4]
                params = vim.OvfManager.CreateImportSpecParams(entityName=name)
                spec = c.ovfManager.CreateImportSpec(desc, pool, datastore, params)
                if spec.error:
                    raise SystemExit(f"{ovf}: {spec.error[0].localizedMessage}")
                lease = pool.ImportVApp(spec.importSpec, vm_folder)
                while lease.state == vim.HttpNfcLease.State.initializing:
                    time.sleep(0.1)
                if lease.state != vim.HttpNfcLease.State.ready:
                    raise SystemExit(f"{ovf}: lease {lease.state}")
                for fi in spec.fileItem:
                    dev = next(d for d in lease.info.deviceUrl if d.importKey == fi.deviceId)
                    target = urllib.parse.urlparse(dev.url.replace("*", u.netloc))
                    path = os.path.join(root, fi.path)
                    conn = http.client.HTTPSConnection(target.netloc, context=ctx,
                                                       blocksize=1 << 20)
                    with open(path, "rb") as f:
                        conn.request("POST", target.path, body=f, headers={
                            "Content-Type": "application/x-vnd.vmware-streamVmdk",
                            "Content-Length": str(os.path.getsize(path)),
                        })
                    r = conn.getresponse()
                    r.read()
                    if r.status != 200:
                        raise SystemExit(f"{path}: HTTP {r.status}")
                lease.HttpNfcLeaseComplete()
    finally:
        Disconnect(si)


if __name__ == "__main__":
    main()
