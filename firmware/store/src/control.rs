//! Messages of the appliance's control API, shared by the firmware (server) and the `odt`
//! tool (client). Types only: no networking here.
