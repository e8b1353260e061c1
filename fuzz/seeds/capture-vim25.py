#!/usr/bin/env python3
"""Seeds for the vim25 fuzz target: real answers of govmomi's vCenter simulator.

Starts the simulator program of the import tests (tests/vcsim, plain HTTP on loopback), walks
the calls `odt import` makes (service content, login, inventory look-ups, properties,
CreateImportSpec, ImportVApp, the lease's info, a refused login) and writes each answer
into fuzz/seeds/vim25/ as an input of the target: mode byte 0 + the whole body; 1 + the
content of each `returnval`; 3 + the import spec's content.

Usage: fuzz/seeds/capture-vim25.py PATH_TO_VCSIM_BINARY
(the tests build it under target/vcsim/; `cargo test -p odt-e2e --test e2e import_trip::` does).
"""
import http.cookiejar
import json
import os
import re
import subprocess
import sys
import urllib.request
from xml.sax.saxutils import escape

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "vim25")

DESCRIPTOR = """<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData">
  <References><File ovf:href="seed-disk1.vmdk" ovf:id="file1" ovf:size="4096"/></References>
  <DiskSection><Info>Virtual disk information</Info>
    <Disk ovf:capacity="64" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <NetworkSection><Info>Networks</Info><Network ovf:name="VM Network"><Description>VM Network</Description></Network></NetworkSection>
  <VirtualSystem ovf:id="seed">
    <Info>A virtual machine</Info><Name>seed</Name>
    <AnnotationSection><Info>Notes</Info><Annotation>from the OVF &amp; kept</Annotation></AnnotationSection>
    <OperatingSystemSection ovf:id="101" ovf:osType="otherLinux64Guest"><Info>OS</Info></OperatingSystemSection>
    <VirtualHardwareSection><Info>Hardware</Info>
      <System><vssd:ElementName>Virtual Hardware Family</vssd:ElementName><vssd:InstanceID>0</vssd:InstanceID><vssd:VirtualSystemIdentifier>seed</vssd:VirtualSystemIdentifier><vssd:VirtualSystemType>vmx-13</vssd:VirtualSystemType></System>
      <Item><rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits><rasd:Description>CPUs</rasd:Description><rasd:ElementName>1 CPU</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>1</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:Description>Memory</rasd:Description><rasd:ElementName>256MB</rasd:ElementName><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>256</rasd:VirtualQuantity></Item>
      <Item><rasd:Address>0</rasd:Address><rasd:Description>SCSI</rasd:Description><rasd:ElementName>SCSI 0</rasd:ElementName><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>lsilogic</rasd:ResourceSubType><rasd:ResourceType>6</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:ElementName>Disk 1</rasd:ElementName><rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>4</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>7</rasd:AddressOnParent><rasd:AutomaticAllocation>true</rasd:AutomaticAllocation><rasd:Connection>VM Network</rasd:Connection><rasd:ElementName>NIC 1</rasd:ElementName><rasd:InstanceID>5</rasd:InstanceID><rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"""


def moref(name, kind, value):
    return f'<{name} type="{kind}">{escape(value)}</{name}>'


class Sim:
    def __init__(self, binary):
        self.proc = subprocess.Popen(
            [binary, "-http", "-folders", "odt"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        info = json.loads(self.proc.stdout.readline())
        self.url = info["url"]
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )
        self.n = 0

    def call(self, method, this, args=""):
        body = (
            '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
            'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>'
            f'<{method} xmlns="urn:vim25">{this}{args}</{method}></soapenv:Body></soapenv:Envelope>'
        )
        req = urllib.request.Request(
            self.url,
            data=body.encode(),
            headers={"Content-Type": "text/xml", "SOAPAction": "urn:vim25/6.7"},
        )
        try:
            answer = self.opener.open(req).read()
        except urllib.error.HTTPError as e:  # faults come with HTTP 500
            answer = e.read()
        self.save(method, answer)
        return answer.decode()

    def save(self, method, answer):
        self.n += 1
        stem = os.path.join(OUT, f"{self.n:02d}-{method}")
        with open(stem + ".raw", "wb") as f:
            f.write(b"\x00" + answer)
        for i, rv in enumerate(re.findall(rb"<returnval[^>]*>(.*?)</returnval>", answer, re.S)):
            with open(f"{stem}.returnval{i}", "wb") as f:
                f.write(b"\x01" + rv)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def first(pattern, text):
    m = re.search(pattern, text, re.S)
    if not m:
        sys.exit(f"capture-vim25: {pattern!r} not found in {text[:400]}")
    return m.group(1)


def props(sim, kind, value, *paths):
    spec = "".join(f"<pathSet>{p}</pathSet>" for p in paths)
    return sim.call(
        "RetrieveProperties",
        moref("_this", "PropertyCollector", "propertyCollector"),
        f"<specSet><propSet><type>{kind}</type>{spec}</propSet><objectSet>"
        f"{moref('obj', kind, value)}<skip>false</skip></objectSet></specSet>",
    )


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    os.makedirs(OUT, exist_ok=True)
    sim = Sim(sys.argv[1])
    try:
        si = moref("_this", "ServiceInstance", "ServiceInstance")
        sim.call("RetrieveServiceContent", si)
        sm = moref("_this", "SessionManager", "SessionManager")
        sim.call("Login", sm, "<userName>odt</userName><password>wrong</password>")
        sim.call("Login", sm, "<userName>odt</userName><password>secret</password>")
        idx = moref("_this", "SearchIndex", "SearchIndex")
        find = lambda p: sim.call("FindByInventoryPath", idx, f"<inventoryPath>{p}</inventoryPath>")
        folder = first(r'<returnval type="Folder">([^<]*)<', find("/DC0/vm/odt"))
        find("/DC0/vm/nowhere")
        cluster = first(r'<returnval type="ClusterComputeResource">([^<]*)<', find("/DC0/host/DC0_C0"))
        ds = first(r'<returnval type="Datastore">([^<]*)<', find("/DC0/datastore/LocalDS_0"))
        net = first(r'<returnval type="[A-Za-z]*">([^<]*)<', find("/DC0/network/DC0_DVPG0"))
        pool = first(r'type="ResourcePool">([^<]*)<', props(sim, "ClusterComputeResource", cluster, "resourcePool"))
        hosts = first(r'<returnval type="Folder">([^<]*)<', find("/DC0/host"))
        props(sim, "Folder", hosts, "childEntity")
        spec = sim.call(
            "CreateImportSpec",
            moref("_this", "OvfManager", "OvfManager"),
            f"<ovfDescriptor>{escape(DESCRIPTOR)}</ovfDescriptor>{moref('resourcePool', 'ResourcePool', pool)}"
            f"{moref('datastore', 'Datastore', ds)}<cisp><locale></locale><deploymentOption></deploymentOption>"
            f"<entityName>seed</entityName><networkMapping><name>VM Network</name>"
            f"{moref('network', 'DistributedVirtualPortgroup', net)}</networkMapping></cisp>",
        )
        attrs = first(r"<importSpec([^>]*)>", spec)
        content = first(r"<importSpec[^>]*>(.*)</importSpec>", spec)
        with open(os.path.join(OUT, "spec-content"), "wb") as f:
            f.write(b"\x03" + content.encode())
        lease = first(
            r'<returnval type="HttpNfcLease">([^<]*)<',
            sim.call(
                "ImportVApp",
                moref("_this", "ResourcePool", pool),
                f'<spec{attrs}>{content}</spec>{moref("folder", "Folder", folder)}',
            ),
        )
        props(sim, "HttpNfcLease", lease, "state")
        props(sim, "HttpNfcLease", lease, "info")
        sim.call("HttpNfcLeaseAbort", moref("_this", "HttpNfcLease", lease))
        sim.call("Logout", sm)
    finally:
        sim.close()
    print(f"capture-vim25: {len(os.listdir(OUT))} seeds in {OUT}")


if __name__ == "__main__":
    main()
