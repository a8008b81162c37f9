import Testing
@testable import PTLCluster

@Test func linksLibZMQ4() {
    let v = zeroMQVersion()
    #expect(v.major == 4)
}
