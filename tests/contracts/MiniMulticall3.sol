// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @notice The part of Multicall3 the monitor uses, with Multicall3's ABI and behaviour, written
/// for these tests. The tests place its runtime code at Multicall3's canonical address
/// 0xcA11bde05977b3631167028862bE2a173976CA11 with anvil_setCode.
contract MiniMulticall3 {
    struct Call3 {
        address target;
        bool allowFailure;
        bytes callData;
    }

    struct Result {
        bool success;
        bytes returnData;
    }

    /// @notice Calls each target in order and returns every outcome. Reverts as a whole when a
    /// call with allowFailure false fails. A call to an address without code succeeds with
    /// empty return data, as it does in Multicall3.
    function aggregate3(Call3[] calldata calls) external payable returns (Result[] memory results) {
        results = new Result[](calls.length);
        for (uint256 i = 0; i < calls.length; i++) {
            Call3 calldata call = calls[i];
            (bool success, bytes memory returnData) = call.target.call(call.callData);
            require(success || call.allowFailure, "Multicall3: call failed");
            results[i] = Result({success: success, returnData: returnData});
        }
    }

    function getEthBalance(address addr) external view returns (uint256 balance) {
        balance = addr.balance;
    }

    function getBlockNumber() external view returns (uint256 blockNumber) {
        blockNumber = block.number;
    }
}
